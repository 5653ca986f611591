variable "do_token" {
  description = "DigitalOcean API token (export TF_VAR_do_token=...)."
  type        = string
  sensitive   = true
}

variable "name" {
  description = "Prefix of every resource's name."
  type        = string
  default     = "depthbook"
}

variable "region" {
  description = "DigitalOcean region of the droplet and the database."
  type        = string
  default     = "fra1"
}

variable "droplet_size" {
  description = "Droplet size: s-2vcpu-4gb runs 200 symbols (see README for costs)."
  type        = string
  default     = "s-2vcpu-4gb"
}

variable "db_size" {
  description = "Managed PostgreSQL node size."
  type        = string
  default     = "db-s-1vcpu-2gb"
}

variable "db_version" {
  description = "PostgreSQL major version of the managed cluster (TimescaleDB is available as an extension)."
  type        = string
  default     = "16"
}

variable "ssh_public_key" {
  description = "Public key allowed to log in to the droplet (contents, not a path)."
  type        = string
}

variable "admin_cidrs" {
  description = "Addresses allowed to reach SSH."
  type        = list(string)
}

variable "allowed_cidrs" {
  description = "Addresses allowed to reach the API (8080) and Grafana (3000)."
  type        = list(string)
  default     = ["0.0.0.0/0", "::/0"]
}

variable "repo_url" {
  description = "Git repository the droplet clones and builds."
  type        = string
  default     = "https://github.com/depthbook/depthbook.git"
}

variable "repo_ref" {
  description = "Branch or tag to deploy."
  type        = string
  default     = "main"
}

variable "ingest_top" {
  description = "Symbols collected per venue (manage.sh scale N changes it later)."
  type        = number
  default     = 200
}

variable "daily_bucket" {
  description = "Spaces bucket to create for the daily research set (empty: none; the files stay in the droplet's daily volume). Spaces exists in some regions only (e.g. nyc3, sfo3, ams3, fra1, sgp1, syd1)."
  type        = string
  default     = ""
}

variable "spaces_access_id" {
  description = "Spaces access key: creates daily_bucket and lets the droplet upload to it."
  type        = string
  default     = ""
  sensitive   = true
}

variable "spaces_secret_key" {
  description = "Spaces secret key (with spaces_access_id)."
  type        = string
  default     = ""
  sensitive   = true
}
