# The version of gradequeue this plugin deploys (the repository's pyproject.toml): they are released together.
__version__ = "0.1.0"
