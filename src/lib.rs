pub mod event;
pub mod names;
