//! The `out` step. Pushing is not implemented yet (the step answers so);
//! this holds the tag computation it will use, complete and tested.

pub mod tags;
