"""Fine-tune a Qwen3 model on a small dataset with LoRA, then ask it a question: the seed API in
a dozen lines. The same run can be made from the page or with `python -m studio train`.

    python examples/simple_finetune.py                       # Qwen3-0.6B on the Alpaca example
    python examples/simple_finetune.py --model demo:SmolLM2-135M-Instruct --max-steps 30
"""
import argparse
from pathlib import Path

from studio import FineTuningConfig, generate_text, load_model_and_tokenizer, run_fine_tuning

ASSETS = Path(__file__).resolve().parent.parent / "assets"

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--model", default="Qwen/Qwen3-0.6B")
parser.add_argument("--data", default=str(ASSETS / "example_alpaca.jsonl"))
parser.add_argument("--output-dir", default="runs/simple-finetune")
parser.add_argument("--max-steps", type=int, default=60)
parser.add_argument("--prompt", default="Give me three tips for staying focused.")
args = parser.parse_args()

# Fields left out are decided from the hardware found (CPU or GPU, bf16, 4-bit when needed).
config = FineTuningConfig(
    model_name=args.model,
    output_dir=args.output_dir,
    lora_r=16,
    lora_alpha=32,
    target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
    learning_rate=2e-4,
    batch_size=2,
    gradient_accumulation_steps=2,
    max_steps=args.max_steps,
    max_seq_length=512,
    logging_steps=5,
)
adapter = run_fine_tuning(data_path=args.data, config=config)
print(f"adapter saved in {adapter}")

model, tokenizer = load_model_and_tokenizer(args.output_dir)   # the base model plus the adapter
print(generate_text(model, tokenizer, args.prompt, max_new_tokens=128, temperature=0.7))
