import SUDERCluster
print("suder")
