pub mod app;
pub mod cos;
pub mod edge;
pub mod init;
pub mod k8s;
pub mod oci;
pub mod render;
