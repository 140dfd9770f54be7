"""LibraGen ComfyUI nodes. The registry fills in as node modules land."""
NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
