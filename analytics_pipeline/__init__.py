"""analytics-pipeline: self-hosted product-analytics events, from clients to your warehouse, exactly once."""
