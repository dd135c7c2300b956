//! Attacks: crypto (design §9).
