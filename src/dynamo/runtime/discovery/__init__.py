"""Service discovery behind one interface: mem, file, etcd and kubernetes."""
