"""Generated protobuf and gRPC modules of the trainforge v1 contract (scripts/gen_protos.sh)."""
