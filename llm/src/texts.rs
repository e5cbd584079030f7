//! Default texts. (being written)
