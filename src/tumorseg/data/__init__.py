"""Datasets in the kaggle_3m layout, patient-level splits, preprocessing and augmentation."""

from .lgg import Case, CaseArrays, find_cases, load_case, split_cases

__all__ = ["Case", "CaseArrays", "find_cases", "load_case", "split_cases"]
