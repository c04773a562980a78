public enum ModelModule {}
