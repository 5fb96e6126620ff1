"""Training and evaluation: NMS, detection metrics, evaluator, predictors."""
