"""The HTTP collector: Segment's Tracking API in front of Kinesis, for SDKs we did not write.

Teams with iOS, Android or web apps already ship a Segment or RudderStack SDK, which can be
pointed at any host; none of them will ship AWS credentials. The collector takes those SDKs'
requests unchanged and writes each accepted request to Kinesis as one blob of the existing
contract, so the Lambda path does not change.

Modules: `app` (Starlette routes and answers, `serve` for uvicorn), `payload` (request body ->
blob), `auth` (write keys -> sources), `kinesis` (the PutRecords shared by concurrent requests).
Its deployable needs boto3, msgspec, starlette, uvicorn (and isal for faster gzip); nothing here
imports Dagster, DuckDB or Google Cloud.
"""
