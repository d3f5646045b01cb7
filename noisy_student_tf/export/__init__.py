"""Export a model dir to a TF Serving SavedModel (EXPORT_DIR/<version>/).

saved_model.py: `ExportConfig`, `export(config) -> ExportResult` (the ns-export library);
signatures.py: the `serving_default` (image bytes) and `predict_images` (0-255 float images)
signatures; warmup.py: assets.extra/tf_serving_warmup_requests; versions.py: the version folders.
"""
