"""The benchmark harness behind ``scripts/bench``: cosfs side by side with s3fs-fuse
and rclone mount, on the same local server, in one run."""
