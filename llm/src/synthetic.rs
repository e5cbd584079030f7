//! The synthetic model. (being written)
