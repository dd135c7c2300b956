//! Attacks: squatting (design §9).
