//! The analyst rule language (being written).
