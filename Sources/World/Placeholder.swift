public enum WorldModule {}
