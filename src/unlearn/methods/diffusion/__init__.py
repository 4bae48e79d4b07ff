"""Methods only class-conditional diffusion models have (ESD, SalUn for DDPM, DiMUM)."""
