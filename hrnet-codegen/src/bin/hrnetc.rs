//! `hrnetc`: the HRNet compiler's command line.
fn main() {}
