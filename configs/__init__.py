"""Configuration files shipped with the package: server settings, the seed's training template,
runnable examples and the DeepSpeed ZeRO configurations the recipe fills in."""
