"""Our StyleGAN2-ADA-style trainer (the bundled host): it gets NDA only through trainer plugins."""
