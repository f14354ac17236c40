pub mod app;
pub mod edge;
pub mod init;
pub mod k8s;
pub mod oci;
pub mod render;
