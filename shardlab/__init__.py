"""shardlab: the command line and package metadata."""
