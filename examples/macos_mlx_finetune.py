"""Fine-tune a 4-bit Qwen3 on Apple Silicon through MLX-LM (QLoRA on the unified memory), then
chat with it. On Linux the same script runs on the CPU through mlx[cpu], slowly.

    pip install -e ".[mlx]"
    python examples/macos_mlx_finetune.py
    python examples/macos_mlx_finetune.py --model mlx-community/Qwen3-4B-Instruct-2507-4bit
"""
import argparse
from pathlib import Path

from studio import FineTuningConfig, generate_text, load_model_and_tokenizer, run_fine_tuning

ASSETS = Path(__file__).resolve().parent.parent / "assets"

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--model", default="mlx-community/Qwen3-0.6B-4bit")
parser.add_argument("--data", default=str(ASSETS / "example_messages.jsonl"))
parser.add_argument("--output-dir", default="runs/mlx-finetune")
parser.add_argument("--max-steps", type=int, default=100)
parser.add_argument("--prompt", default="What can you help me with?")
args = parser.parse_args()

config = FineTuningConfig(
    model_name=args.model,        # already quantised: MLX loads it as it is (no load_in_4bit)
    output_dir=args.output_dir,
    backend="mlx",
    lora_r=8,
    lora_alpha=16,
    lora_layers=16,               # adapters on the last 16 layers, as mlx_lm's own default
    learning_rate=1e-4,
    batch_size=4,
    gradient_accumulation_steps=1,
    max_steps=args.max_steps,
    max_seq_length=1024,
    logging_steps=10,
)
adapter = run_fine_tuning(data_path=args.data, config=config)
print(f"adapter saved in {adapter} (merge it with backends.mlx.fuse, or run it as it is)")

model, tokenizer = load_model_and_tokenizer(args.output_dir)
print(generate_text(model, tokenizer, args.prompt, max_new_tokens=128, temperature=0.7))
