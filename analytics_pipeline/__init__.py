"""analytics-pipeline: your product-analytics events in your own warehouse, exactly once."""
