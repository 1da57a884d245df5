"""Provider-neutral requests, replies and errors: what servicers, router and providers share."""
