pub mod event;
pub mod names;
pub mod config;
pub mod chat;
pub mod ids;
pub mod reply;
pub mod app;
pub mod default_app;
