"""Pure decisions: plain data in, plain data out. Imports only the standard library and states."""
