"""Thin gRPC servicers: validate and translate proto <-> domain, delegate, translate back."""
