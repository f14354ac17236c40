pub mod init;
pub mod render;
