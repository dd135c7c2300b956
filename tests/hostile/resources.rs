//! Attacks: resources (design §9).
