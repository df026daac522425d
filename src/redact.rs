//! Secret redaction: every value known to be secret is replaced by `***` wherever it is printed.
