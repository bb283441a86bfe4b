"""Local stand-ins for the AWS parts: the moto emulator, resource bootstrap, the Kinesis trigger."""
