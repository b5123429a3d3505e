"""The kernels, the lowest floor (torch only): fast sequence loops hand-differentiated in C++ (`csrc/`),
each beside its plain Python form and proven equal to the cells' equations (tests/test_fast_*.py);
`extension` builds and loads every one of them; `flush` is the flush-to-zero switch; `lengths` the
padded-batch mask; `variants` the LSTM family's switches, shared with the cells."""
