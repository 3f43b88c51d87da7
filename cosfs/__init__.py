"""cosfs: mount a Tencent Cloud COS bucket (or an S3-compatible store) as a folder."""

__version__ = "0.1.0"
