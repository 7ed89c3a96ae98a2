//! hrnet-ir: the HRNet front end, IR, passes, printers and reference interpreter.
#![deny(missing_docs)]
