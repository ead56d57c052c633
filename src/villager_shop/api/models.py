"""Request bodies (validated) and response shapes (documentation: PostgreSQL builds the JSON)."""

from __future__ import annotations

import unicodedata
import uuid
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

INT32 = 2**31 - 1


def _storable(value: str) -> str:
    if "\x00" in value:
        raise ValueError("NUL characters are not allowed")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode text") from None
    return value


def _visible(value: str) -> str:
    """A name must show something: not only spaces, zero-width or other format characters."""
    if all(c.isspace() or unicodedata.category(c) in ("Cf", "Cc", "Zs", "Zl", "Zp") for c in value):
        raise ValueError("a name needs at least one visible character")
    return value


Text = Annotated[str, AfterValidator(_storable)]
Name = Annotated[Text, Field(min_length=1, max_length=200), AfterValidator(_visible)]
Description = Annotated[Text, Field(max_length=5000)]
# Slugs follow the category name (up to 2,000 bytes before the name is bounded: migration rules).
Slug = Annotated[Text, Field(min_length=1, max_length=2048)]
Price = Annotated[Decimal, Field(gt=0, le=Decimal("99999999.99"), max_digits=10, decimal_places=2,
                                 allow_inf_nan=False)]
Stock = Annotated[int, Field(ge=0, le=INT32)]
SortOrder = Annotated[int, Field(ge=-1_000_000, le=1_000_000)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Patch(_Body):
    """A partial update: absent fields are left alone; null is only accepted where a value may be null."""

    nullable: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _no_null(self) -> _Patch:
        for name in self.model_fields_set:
            if getattr(self, name) is None and name not in self.nullable:
                raise ValueError(f"{name} cannot be null")
        return self

    def changes(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)


class ProductCreate(_Body):
    shop_id: uuid.UUID
    name: Name
    description: Description | None = None
    category: Slug | None = Field(default=None, description="slug of an active category")
    price: Price
    stock: Stock = 0
    is_available: bool = True
    variant_name: Name = "Default"


class ProductUpdate(_Patch):
    nullable: ClassVar[frozenset[str]] = frozenset({"description", "category"})
    name: Name | None = None
    description: Description | None = None
    category: Slug | None = Field(default=None, description="slug of an active category; null = none")
    is_available: bool | None = None


class VariantCreate(_Body):
    name: Name
    price: Price
    stock: Stock = 0
    sku: Annotated[Text, Field(min_length=1, max_length=100)] | None = None
    sort_order: SortOrder = 0
    is_active: bool = True


class VariantUpdate(_Patch):
    price: Price | None = None
    stock: Stock | None = None
    is_active: bool | None = None
    name: Name | None = None
    sort_order: SortOrder | None = None


class OrderItemIn(_Body):
    variant_id: uuid.UUID
    quantity: Annotated[int, Field(ge=1, le=1000)]


class OrderCreate(_Body):
    items: Annotated[list[OrderItemIn], Field(min_length=1, max_length=50)]


class OrderStatusUpdate(_Body):
    status: Literal["confirmed", "delivered", "cancelled"]


# -- response shapes (documentation) ------------------------------------------------------------


class CategoryOut(BaseModel):
    id: uuid.UUID
    name: str
    slug: str


class ShopBrief(BaseModel):
    id: uuid.UUID
    name: str
    rating: float


class AddressOut(BaseModel):
    id: uuid.UUID
    house_number: str


class VariantOut(BaseModel):
    id: uuid.UUID
    sku: str
    name: str
    price: float
    stock: int
    is_default: bool
    sort_order: int


class VariantDetailOut(VariantOut):
    is_active: bool


class ProductOut(BaseModel):
    id: uuid.UUID
    name: str
    description: str | None
    base_price: float | None
    rating: float
    order_count: int
    category: CategoryOut | None
    shop: ShopBrief
    variants: list[VariantOut]


class ProductPage(BaseModel):
    items: list[ProductOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")


class ShopOut(ShopBrief):
    is_open: bool
    address: AddressOut | None
    product_count: int


class ProductShopOut(ShopBrief):
    is_open: bool
    address: AddressOut | None


class ProductDetailOut(BaseModel):
    id: uuid.UUID
    name: str
    description: str | None
    base_price: float | None
    rating: float
    order_count: int
    is_available: bool
    created_at: str
    updated_at: str
    category: CategoryOut | None
    shop: ProductShopOut
    variants: list[VariantDetailOut]


class OrderItemOut(BaseModel):
    id: uuid.UUID
    product_id: uuid.UUID
    variant_id: uuid.UUID | None
    quantity: int
    unit_price: float


class OrderOut(BaseModel):
    id: uuid.UUID
    customer_id: uuid.UUID
    shop_id: uuid.UUID
    status: str
    subtotal: float
    delivery_fee: float
    total: float
    created_at: str
    updated_at: str
    items: list[OrderItemOut]


class OrderPage(BaseModel):
    items: list[OrderOut]
    next_cursor: str | None


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"]
    expires_in: int


class MeOut(BaseModel):
    id: uuid.UUID
    role: str


class ErrorOut(BaseModel):
    detail: Any
