//! Attacks: connections (design §9).
