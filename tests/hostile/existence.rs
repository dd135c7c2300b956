//! Attacks: existence (design §9).
