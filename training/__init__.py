"""Training: data, fitting, calibration, export, evaluation and registration of routers."""
