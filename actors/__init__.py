"""Ray actors: thin shells that place the library's objects on the cluster and move data to and from them."""
