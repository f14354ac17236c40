pub mod app;
pub mod init;
pub mod render;
