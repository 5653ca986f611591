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
  description = "Droplet size: s-4vcpu-8gb runs 200 + 200 symbols with the database beside them (README, Costs)."
  type        = string
  default     = "s-4vcpu-8gb"
}

variable "database" {
  description = "self-hosted: TimescaleDB (community, compression) in a container on the droplet, its data on a block-storage volume; managed: DigitalOcean's managed PostgreSQL (TimescaleDB's Apache edition, no compression: about 7x the disk per day, README, Costs)."
  type        = string
  default     = "self-hosted"
  validation {
    condition     = contains(["self-hosted", "managed"], var.database)
    error_message = "database is self-hosted or managed."
  }
}

variable "db_volume_gb" {
  description = "Block-storage volume for the self-hosted database (and the droplet's other Docker volumes), in GB. Default: 250 with a daily_bucket (the cold tier is in Spaces), 650 without (30 days of daily files stay on the volume); README, Costs."
  type        = number
  default     = null
}

variable "hot_days" {
  description = "Days of depth, checkpoints and quotes kept in the database; older days leave once the daily files hold them, verified (README, Hot and cold tiers). 3 days of 200 + 200 symbols take about 130 GB compressed."
  type        = number
  default     = 3
}

variable "db_size" {
  description = "Managed PostgreSQL node size (database = managed)."
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
  description = "Addresses allowed to reach HTTPS (the API, GraphiQL, Grafana) when no domain is set; with a domain, 80 and 443 are open to all so Let's Encrypt can validate it."
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

variable "domain" {
  description = "Public name for HTTPS with a Let's Encrypt certificate, e.g. depthbook.example.com. Empty: HTTPS on the droplet's address with Caddy's internal CA."
  type        = string
  default     = ""
}

variable "dns_zone" {
  description = "A domain in DigitalOcean DNS that holds var.domain, e.g. example.com: Terraform creates the A record. Empty: point the name at droplet_ip yourself."
  type        = string
  default     = ""
}

variable "db_disk_gb" {
  description = "Disk of the managed database plan in GB (db-s-1vcpu-1gb: 10, db-s-1vcpu-2gb: 25, db-s-2vcpu-4gb: 38), for the alert that fires days before it fills (database = managed)."
  type        = number
  default     = 25
}

variable "collector_regions" {
  description = "Regions of extra collector droplets, e.g. [\"ams3\", \"sgp1\"]: each runs only ingest and shares the symbols with the app droplet's collector by shard leases (README, Several collectors). Needs database = managed (they reach it over TLS at its public address)."
  type        = list(string)
  default     = []
}

variable "collector_size" {
  description = "Droplet size of each extra collector (about 10 % of a core and 65 MB per 500 books, bench/REPORT.md §8)."
  type        = string
  default     = "s-1vcpu-2gb"
}

variable "standby" {
  description = "With collector_regions: every collector also stands by for the shards the others hold (ingest --standby), so a collector's death leaves no gap; each then collects every symbol (README, Hot standby)."
  type        = bool
  default     = false
}

variable "shards" {
  description = "Shards the symbol universe is split into when collector_regions is set: the same on every collector, at least their number (README, Several collectors)."
  type        = number
  default     = 16
}
