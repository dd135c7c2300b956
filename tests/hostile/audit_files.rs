//! Attacks: audit_files (design §9).
