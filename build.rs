// Exposes the target CPython's version as cfgs (Py_3_12, Py_3_13, ...): isolation="interpreter"
// is compiled only for interpreters whose subinterpreters can have their own GIL safely (3.13+).
fn main() {
    pyo3_build_config::use_pyo3_cfgs();
}
