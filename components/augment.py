"""augment: the KFP wrapper of aimass/augmentation/stage.py's `augment` (the policy lives in
aimass/augmentation/policy.py)."""
from kfp.dsl import HTML, Dataset, Input, Output

from aimass.components.base import project_component


@project_component
def augment_component(config_json: str, splits: Input[Dataset], training_set: Output[Dataset],
                      preview: Output[HTML]):
    """Augment the train split with the configured policy.

    Args:
        config_json: the resolved AimassConfig as JSON (policy and expansion under `augment`).
        splits: the ingest output; only `train` is read.
        training_set: the train split followed by its augmented copies, in the aimass data set format; with
            augment.expansion=0 it holds no images and train reads the ingest output's train split.
        preview: originals beside their augmented versions, as an HTML page.
    """
    from pathlib import Path

    from aimass.augmentation.stage import augment
    from aimass.config import AimassConfig

    result, page = augment(AimassConfig.from_json(config_json), Path(splits.path), Path(training_set.path))
    Path(preview.path).write_text(page)
    training_set.metadata.update({"data_md5": splits.metadata["data_md5"], "original_images": result.original_images,
                                  "added_images": result.added_images, "device": result.device,
                                  "augment_images_per_second": result.images_per_second})
