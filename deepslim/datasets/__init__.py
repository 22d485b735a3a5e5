"""Dataset sources behind deepslim.data.open_dataset."""
