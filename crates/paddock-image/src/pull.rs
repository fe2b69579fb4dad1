pub struct ImageStore;
pub struct RegistryConfig;
