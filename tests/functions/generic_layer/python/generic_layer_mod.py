LAYER = "generic"
