"""Environment variables one deeplab process sets for another that it starts.

Standard library only: the launcher (``deeplab.orchestration.cluster``) and the tasks it starts
(``deeplab.training.distribute``) both read these names, so they live below both.
"""

# Set to "1" in deeplab.launch_local's environment once it runs inside its private network
# namespace (inherited by every task it starts): a server task then says that only the cluster's
# own processes can reach it.
NETNS_ENV = "DEEPLAB_LAUNCH_NETNS"
