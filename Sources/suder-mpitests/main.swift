import SUDERCluster
print("mpitests")
