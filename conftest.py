# The plugin's own tests drive pytest inside pytest (pytester); the plugin itself is loaded through
# its pytest11 entry point, so nothing else belongs here.
pytest_plugins = ("pytester",)
